"""Form fields the consoles share."""

import json

from django import forms


class JSONTextField(forms.Field):
    """JSON typed into a text area (a segment's rule, a funnel's steps); empty is None. A plain
    field: a CharField promises a string back, and this one gives the parsed JSON."""

    def __init__(self, *, rows: int = 12, **kwargs: object) -> None:
        kwargs.setdefault(
            "widget",
            forms.Textarea(
                attrs={"rows": rows, "spellcheck": "false", "style": "width: 100%; font-family: monospace;"}
            ),
        )
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def to_python(self, value: object) -> object:
        text = "" if value in self.empty_values else str(value).strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(
                f"not JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from error

    def prepare_value(self, value: object) -> object:
        return (
            value
            if isinstance(value, str) or value is None
            else json.dumps(value, indent=2, ensure_ascii=False)
        )
