"""Tags and segments: the rule language, membership kept fresh, and their APIs (models in
``members.models``)."""
