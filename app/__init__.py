"""Streamlit explorer (installed as ``interp.app``)."""
