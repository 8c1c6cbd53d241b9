"""Parts of the AD-RegNet module that need the Slicer application: parameters, Logic, pair table, self-test."""
