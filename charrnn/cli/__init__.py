"""The command line: parse options, build a config, call the library, show the result. The only code that prints."""
