"""``engine.sitk_fit.one_thread``: SimpleITK's global default of threads at one inside the block, put back by the
last block to leave, also when registrations run in threads of one process."""
from __future__ import annotations

import threading

import SimpleITK as sitk

from ADRegNetLib.engine.sitk_fit import one_thread


def test_one_thread_nests_and_puts_the_default_back():
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    with one_thread():
        with one_thread():
            assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1  # the outer block still holds it
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    with one_thread(False):
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before


def test_overlapping_blocks_in_threads_keep_one_thread_until_the_last_leaves():
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with one_thread():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with one_thread():
            second_in.set()
            first_out.wait(5)
            seen.append(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [1]  # the first left while the second still fitted: one thread kept
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
