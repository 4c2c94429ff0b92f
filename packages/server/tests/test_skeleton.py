import execauth_server


def test_version_is_lockstep_with_core() -> None:
    import execauth_core

    assert execauth_server.__version__ == execauth_core.__version__
