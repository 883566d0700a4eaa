"""What a model's outputs rest on and where it cuts: ``ism`` (in-silico mutagenesis),
``boundaries`` (chunk boundaries over a region), ``enrichment`` (boundaries at feature edges against
shift and GC-matched controls), ``chunk_stats`` (chunk lengths in repeats and annotations) and
``plots``."""
