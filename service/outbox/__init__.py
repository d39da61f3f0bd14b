"""Transactional outbox: side effects written with the state change, sent after commit."""
