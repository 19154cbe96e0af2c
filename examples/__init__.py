"""Runnable example applications (installed as ``jambonz_trio._examples``)."""
