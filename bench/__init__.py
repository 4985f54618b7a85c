"""The benchmark harness of issue 7: ``python -m bench --scenario {day,storm,ramp} ...``.

It starts the real central system (``csms run``, SQLite, the OCPI bridge on), a local OCPI
hub that registers as MOBI.E does, and load generators in their own processes that open real
websockets, plays a scenario, measures the server (CPU, memory, answer times, pushes) and,
with the same connections and frames, a bare websockets echo server; then prints a table and
writes a JSON file. See ``bench/__main__.py`` for the options.
"""
