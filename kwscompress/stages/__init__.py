"""One module per pipeline stage; :class:`kwscompress.Pipeline` calls them in order."""
