"""The embedded data set: real recordings from Debian packages, mixed into captioned scenes.

AudioCaps and Clotho (paper section 3.1) cannot be downloaded where this project is built, so
``thadcr data build`` makes a small stand-in from real recordings that Debian packages ship.
The modules, in the order the build uses them (each imports only the ones above it):

1. :mod:`~thadcr.data.embedded.packages`: :func:`~thadcr.data.embedded.packages.fetch_packages`
   runs ``apt-get download`` (never install) into a cache, or takes a folder of ``.deb`` files /
   extracted trees, and extracts only their audio and text; package versions, Debian copyright
   files and licences; every audio file of a package with a reader for its samples.
2. :mod:`~thadcr.data.embedded.inventory`: :func:`~thadcr.data.embedded.inventory.inventory`
   matches every audio file against the curated table ``embedded_sources.csv`` (kept: an event or
   background class; dropped: a reason such as jingle, interface beep, music loop), with the
   class phrases of ``embedded_classes.csv``; :func:`~thadcr.data.embedded.inventory.prepare_audio`
   resamples, trims, loudness-normalises and drops silent recordings;
   :func:`~thadcr.data.embedded.inventory.assign_splits` keeps source recordings disjoint between
   development / validation / evaluation, stratified by class, from the seed.
3. :mod:`~thadcr.data.embedded.scenes`: :func:`~thadcr.data.embedded.scenes.plan_scene` places
   1-3 events in time over a background; :func:`~thadcr.data.embedded.scenes.render_scene` mixes
   them; :func:`~thadcr.data.embedded.scenes.scene_captions` writes 5 distinct captions from the
   timeline with ordering and overlap words ("then", "while", "followed by", "in the distance",
   "... in the background").
4. :mod:`~thadcr.data.embedded.build`: :func:`~thadcr.data.embedded.build.build` writes the
   flavours ``audiocaps``, ``clotho`` and ``labels`` in the Clotho v2 layout with a README
   (sources, licences) and ``manifest.json`` (sha256 of every file); the sha256 of every module
   of this package, ``thadcr.portable`` and both tables is part of the build parameters.

Choices are listed in ``docs/decisions/data.md``.
"""
