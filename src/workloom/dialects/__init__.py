"""Dialects: other services' APIs served on Workloom's engine, one package per seed document.

A dialect routes and translates — paths, parameters, bodies, envelopes, status vocabularies and error
shapes — onto engine calls. It holds no business rule: what a dialect needs that the engine lacks is
built in the engine first, then mapped.
"""
