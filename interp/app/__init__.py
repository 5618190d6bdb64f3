"""Streamlit explorer (``interp.app``): ``interp app [--reports DIR] [--model NAME]``.

``main.py`` is the entry script; ``views/`` holds one module per page (head scores, neurons,
knob, circuits); ``report_files`` finds and checks report folders, ``model_cache`` loads each
model once per server process, ``ui`` holds what pages share (pickers, cached reads, errors
shown as messages), ``paths`` writes paths as pages show them (never absolute) and ``figures``
the plotly figures. Pages hold no analysis: they call the same API a notebook would.
"""
