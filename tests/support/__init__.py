"""The tests' support package: helpers shared by the tests, the benchmarks and the demo.

Fixtures live in ``conftest.py`` files (``tests/conftest.py`` for those every folder
uses: ``operator``, ``sim_platform``, ``runtime_launch``, ``database``, the DCAP vectors);
the code behind them lives here, and test modules import it by name::

    from support.operators import create_token, deploy, wait_status
    from support.runtimes import running, verify_enclave

    def test_an_app_runs(operator, tmp_path):
        with operator.client(create_token(operator.data_dir, "alice")) as api: ...

    def test_a_runtime_starts(sim_platform, runtime_launch):
        with running(runtime_launch.args()) as runtime:
            verify_enclave(runtime.port(), sim_platform, runtime_launch.measurement())

No test module imports another test module or a conftest. pytest finds this package
through ``pythonpath = ["tests"]``, mypy through ``mypy_path`` (with
``explicit_package_bases``, so each folder may have its own ``conftest.py``); the
benchmarks and ``scripts/demo.py`` put ``tests/`` on ``sys.path`` themselves.
"""
