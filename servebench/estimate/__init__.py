"""Hardware you do not own: floors, efficiency of measured runs, a calibrated what-if.

- catalog: GPU facts (packaged data with sources) and the host CPU, measured once.
- models: model shapes from shipped configs, a config.json or a preset.
- roofline: the floors and the serving model that turns them into TTFT/TPOT/throughput.
- efficiency: measured vs floor for one run (pure function + run-dir wrapper).
- fit: efficiency factors fitted on measured runs, leave-one-out error, uncertainty bands.
- cli / profile: `servebench estimate` and `servebench profile`.

The core (catalog, models, roofline, efficiency, fit) needs only the standard library, so a
bare GPU machine with torch alone can import it (scripts/device_estimate_check.py).
"""
