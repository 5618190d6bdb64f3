"""One module per page of the explorer; Streamlit runs each as a script (see ``interp.app.main``)."""
