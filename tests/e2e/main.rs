//! End-to-end tests: start the real daemon, talk HTTP.
