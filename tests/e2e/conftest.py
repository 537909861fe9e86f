"""Registry fixtures (artifacts, isolated Redis prefixes) for the tests in this folder."""

from tests.service.registry_fixtures import any_registry, artifacts, redis_registry  # noqa: F401
