"""Test support: repository publisher, HTTP servers, fault-injecting proxy."""
