"""The run context in log records and pool threads (no stand-in needed)."""
import logging
import threading

from shared import telemetry


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_run_id_reaches_records_of_pool_threads_and_names_the_run_once():
    logger = logging.getLogger("shared.test_unit_telemetry")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with telemetry.run_scope(telemetry.RunContext("r-1", manifest="m.txt", trigger="cli", kind="plan")):
            logger.info("plain %s with 100%% args", "text")
            logger.info("already names run %s", "r-1")
            with telemetry.ContextThreadPoolExecutor(max_workers=2, thread_name_prefix="pool") as pool:
                pool.submit(logger.warning, "from a pool thread").result()
            bare = threading.Thread(target=logger.info, args=("from a bare thread",))
            bare.start()
            bare.join()
        logger.info("after the run")
    finally:
        logger.removeHandler(handler)
    by_message = {r.getMessage(): r for r in handler.records}
    assert by_message["[run r-1] plain text with 100% args"].run_id == "r-1"
    assert by_message["already names run r-1"].run_id == "r-1"
    pooled = by_message["[run r-1] from a pool thread"]
    assert pooled.run_id == "r-1" and pooled.threadName.startswith("pool")
    # a thread that was not given the context does not know the run; nor does code after the run
    assert not hasattr(by_message["from a bare thread"], "run_id")
    assert not hasattr(by_message["after the run"], "run_id")


def test_invocation_thread_local_is_set_on_threads_that_carry_the_context():
    tls = threading.local()
    seen = []

    class WorkerLike(logging.Handler):
        def emit(self, record):
            seen.append((record.threadName, getattr(tls, "invocation_id", None)))

    logger = logging.getLogger("shared.test_unit_telemetry_inv")
    logger.addHandler(WorkerLike())
    logger.setLevel(logging.INFO)
    done = threading.Event()

    def request():
        telemetry.bind_invocation(tls, "inv-7")
        with telemetry.ContextThreadPoolExecutor(max_workers=1, thread_name_prefix="work") as pool:
            pool.submit(logger.info, "in the pool").result()
        done.set()

    threading.Thread(target=request, name="caller").start()
    assert done.wait(10)
    assert seen == [("work_0", "inv-7")]
