from serving_support import trained_home  # noqa: F401 - the shared session fixture
