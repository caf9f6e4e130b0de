"""Alert rules from the metric catalogue: the rule model (`rules`, `signals`), the default
rules (`defaults`) and the `[alerts]` settings (`config`).

Light to import, like the catalogue: nothing here loads torch.
"""
