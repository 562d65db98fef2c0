"""The operations console: server-rendered pages for staff over the services' HTTP APIs (it owns no data)."""
