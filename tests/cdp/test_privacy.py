"""Masking of contact details, whatever shape a source stated them in."""

import pytest

from cdp.privacy import mask_contact


@pytest.mark.parametrize(
    ("type_", "value", "shown"),
    [
        ("phone", "+8613800138000", "138****8000"),
        ("phone", 13800138000, "138****8000"),  # a phone stated as a JSON number
        ("phone", ["13800138000", 13900139000], ["138****8000", "139****9000"]),
        ("phone", {"mobile": "13800138000"}, "***"),
        ("email", "Zhang.Wei@Example.com", "z***@example.com"),
        ("phone", None, None),
        ("phone", True, True),
        ("name", "Zhang Wei", "Zhang Wei"),
    ],
)
def test_contact_details_are_masked_in_any_shape(type_, value, shown):
    assert mask_contact(type_, value) == shown
