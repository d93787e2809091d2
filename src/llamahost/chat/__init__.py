"""Chat requests made to work on any template: message normalisation (``messages``) and tool calls
emulated for templates without tool syntax (``tools``). Pure rules over a ``core.transport.
Transport``; imports ``core`` and ``errors``.
"""
