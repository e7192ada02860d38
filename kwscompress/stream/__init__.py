"""Streaming evaluation: long streams, the device's inference loop, the recognizer, DET tuning.

:mod:`~kwscompress.stream.builder`
    streams of one split's words on background noise, with the time of every word;
:mod:`~kwscompress.stream.runner`
    frontend slices over the whole stream and a model window per new slice (or per N);
:mod:`~kwscompress.stream.metrics`
    the matching rule: hits, misses, false accepts per hour, false-reject rate;
:mod:`~kwscompress.stream.tuning`
    DET curves over the detection threshold and the threshold for a target false-accept rate.

The stage that ties them together is :func:`kwscompress.stages.stream.run_stream_stage`.
"""
