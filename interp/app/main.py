"""The Streamlit entry script: ``interp app`` runs ``streamlit run`` on this file.

Settings come from the environment that ``interp app`` sets: ``INTERP_APP_REPORTS``
(report folders, ``os.pathsep``-separated) and ``INTERP_APP_MODEL`` (the model to offer first).
"""

from __future__ import annotations

import os

import streamlit as st

from interp.app import model_cache, ui

PAGES = [
    ("views/heads.py", "Head scores", "heads", ":material/grid_on:"),
    ("views/neurons.py", "Neurons", "neurons", ":material/hub:"),
    ("views/knob.py", "Knob", "knob", ":material/tune:"),
    ("views/circuits.py", "Circuits", "circuits", ":material/account_tree:"),
]


def main() -> None:
    st.set_page_config(page_title="interp explorer", layout="wide")
    flag = os.environ.get(ui.ENV_MODEL) or None
    with st.sidebar:
        options = model_cache.choices(flag)
        st.selectbox("Model", options, index=options.index(flag) if flag else 0, key="model",
                     format_func=lambda spec: ui.display_path(spec) if os.path.isabs(spec) else spec,
                     help="Live views (attention on a prompt, clamping, the knob slider) need a model; "
                          "reports alone need none. A model loads once per server process.")
        st.caption("Reports from: " + ", ".join(f"`{ui.display_path(d)}`" for d in ui.report_dirs()))
    pages = [st.Page(path, title=title, url_path=url, icon=icon, default=(i == 0))
             for i, (path, title, url, icon) in enumerate(PAGES)]
    st.navigation(pages).run()


if __name__ == "__main__":
    main()
