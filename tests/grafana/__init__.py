"""Grafana provisioning and dashboard tests; dashboard_queries is shared with the e2e tests."""
