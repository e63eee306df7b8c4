"""The paper's experiments: the plan of runs behind Tables 1-5, their execution and rendering,
the claims and their verdicts, the power analysis, and the pretraining of the tiny encoders."""
