"""Ray's libraries in a native driver on a gray head: Data, Tune, Train and
Serve, each from a stock `ray.init(address=HOST:PORT)` program (the test venv
installs ray[tune,train,data,serve]==2.60.0)."""

import pytest

from conftest import free_port
from native_pool import make_target


@pytest.fixture(scope="module")
def native(gray_bin):
    p = make_target(gray_bin)
    yield p
    p.stop()


def test_data(native):
    native.check("""
        import tempfile, ray, ray.data
        ray.init(address=ADDRESS)
        ds = ray.data.range(1000).map_batches(lambda b: {"id": b["id"] * 2})
        assert ds.sum("id") == 2 * sum(range(1000))
        groups = ray.data.from_items([{"k": i % 3, "v": i} for i in range(30)]).groupby("k").sum("v").take_all()
        assert sorted(g["sum(v)"] for g in groups) == sorted(sum(range(k, 30, 3)) for k in range(3)), groups
        d = tempfile.mkdtemp()
        ray.data.range(100).write_parquet(d)
        assert sorted(r["id"] for r in ray.data.read_parquet(d).take_all()) == list(range(100))
        ray.shutdown()
    """, timeout=300)


def test_data_inside_a_task(native):
    # The way a remote user runs a pipeline: the driver of the dataset is a
    # task on the cluster (it needs a real core worker there).
    native.check("""
        import ray
        ray.init(address=ADDRESS)

        @ray.remote
        def pipeline():
            import ray.data
            return ray.data.range(200).map(lambda r: {"x": r["id"] + 1}).sum("x")

        assert ray.get(pipeline.remote()) == sum(range(1, 201))
        ray.shutdown()
    """, timeout=300)


def test_tune_grid_with_asha(native):
    native.check("""
        import tempfile, ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        ray.init(address=ADDRESS)

        def trainable(config):
            for i in range(5):
                tune.report({"score": config["x"] * i})

        res = tune.Tuner(
            trainable, param_space={"x": tune.grid_search([1, 2, 3, 4])},
            tune_config=tune.TuneConfig(scheduler=ASHAScheduler(metric="score", mode="max", max_t=5)),
            run_config=tune.RunConfig(storage_path=tempfile.mkdtemp()),
        ).fit()
        assert len(res) == 4 and not res.errors, res.errors
        assert res.get_best_result(metric="score", mode="max").config["x"] == 4
        ray.shutdown()
    """, timeout=300)


def test_train_data_parallel(native):
    native.check("""
        import tempfile, ray, ray.train
        from ray.train import ScalingConfig, RunConfig
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
        ray.init(address=ADDRESS)

        out = tempfile.mkdtemp()

        def loop(config):
            ctx = ray.train.get_context()
            with open("%s/rank-%d" % (config["out"], ctx.get_world_rank()), "w") as f:
                f.write(str(ctx.get_world_size()))
            ray.train.report({"rank": ctx.get_world_rank()})

        r = DataParallelTrainer(loop, train_loop_config={"out": out},
                                scaling_config=ScalingConfig(num_workers=2),
                                run_config=RunConfig(storage_path=tempfile.mkdtemp())).fit()
        assert r.error is None, r.error
        import os
        assert sorted(os.listdir(out)) == ["rank-0", "rank-1"], os.listdir(out)
        assert open(out + "/rank-1").read() == "2"
        ray.shutdown()
    """, timeout=300)


def test_serve_handle_and_http(native):
    port = free_port()
    native.check("""
        import sys, urllib.request, ray
        from ray import serve
        ray.init(address=ADDRESS)
        port = %d

        @serve.deployment
        class Hello:
            def __call__(self, request):
                return "hello " + request.query_params.get("name", "?")

        serve.start(http_options={"port": port})
        handle = serve.run(Hello.bind())
        fake = type("Request", (), {"query_params": {"name": "handle"}})()
        assert handle.remote(fake).result() == "hello handle"
        body = urllib.request.urlopen("http://127.0.0.1:%%d/?name=web" %% port, timeout=60).read()
        assert body == b"hello web", body
        serve.shutdown()
        ray.shutdown()
    """ % port, timeout=300)
