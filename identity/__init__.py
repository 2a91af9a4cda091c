"""Identity: identifier types and normalization, resolution rules, the identity graph,
merge / split and their history. Consumes accepted events; owns no traits or points."""
