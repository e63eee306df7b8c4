"""The paper's section 2: the method and nothing else.

- `htsat`: the HTS-AT audio encoder and its token stages (section 2.1).
- `resnet38`: the PANNs ResNet38 audio encoder of Table 1's first row (section 2.1).
- `audio`: the log-mel front end both audio encoders read, and their checkpoint loaders (section 2.1).
- `text`: the BERT-family text encoder and its word-level layers (section 2.1).
- `alignment`: THA, the transformer-based hierarchical alignment, Eq. 1 (section 2.2).
- `factors`: DCR's disentangled factors, Eq. 2-3, L_D and L_A (Eq. 6-7) and CA (Eq. 4) (section 2.3).
- `losses`: NT-Xent, Eq. 5 (section 2.4).
- `retrieval`: the retrieval model that assembles one variant of Tables 1-3 (section 2.4).
"""
