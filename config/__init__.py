"""Settings and operational configuration (Prometheus, Grafana, campaigns)."""

from config.settings import Settings, SettingsError, env_names, settings_table

__all__ = ["Settings", "SettingsError", "env_names", "settings_table"]
