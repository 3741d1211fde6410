"""The peers the suite measures Workloom against, on the same database in the same run.

``pgqueuer_peer.py`` and ``procrastinate_peer.py`` run with the python of a separate virtualenv the bench
creates (see ``bench.suite.peers_python``); ``bare_endpoint.py`` runs under uvicorn in this environment;
``pgbench_claim.sql`` is pgbench's custom script for the raw claim+complete ceiling.
"""
