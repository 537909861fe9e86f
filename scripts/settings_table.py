"""Print the settings table of docs/serving.md from `ServeSettings` (service.settings.settings_table)."""

from service.settings import settings_table

if __name__ == "__main__":
    print(settings_table())
