"""The platform's shared kernel: staff roles and API tokens, API conventions, health."""
