"""Consent per member and purpose (app label ``consent``): statements kept as history, set from
events, the staff API and the console, read by the rule language and checked by every outflow
(``docs/consent.md``)."""
