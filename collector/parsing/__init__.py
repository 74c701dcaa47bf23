"""Pure parsing: bytes in, typed values out; no Twisted, no I/O, no clock.

``framing`` splits TCP streams and datagrams into messages (RFC 6587, RFC
5426); ``syslog`` reads their headers (RFC 5424, RFC 3164); ``kerio`` reads
the Security log's records; ``shapes`` is one regex for the shapes most
messages take, which lets the pipeline read one message of each shape in
full and count the others with its summary.
"""
