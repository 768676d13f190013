// Anchors the shared precompiled header for the test executables.
