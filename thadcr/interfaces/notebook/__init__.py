"""The helpers the book's notebooks call, one module per kind of page (no model code here):

- `method`: the method pages (start, encoders, THA, DCR, CA, objective): session set-up and
  display, the embedded test split and its scenes, the model picture, the committed runs they
  read and the sentences computed from them or from a page's numbers;
- `results`: the Tables page: the results folder, the claims, run summary, paper and learning
  tables as HTML for the book's content column;
- `figures`: the Figures page: the figure style of the content column, the claims' forest plot
  and the training curves.
"""
