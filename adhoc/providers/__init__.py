"""Payment providers of ad hoc charging: the interface (:mod:`adhoc.providers.base`) and its
implementations (``manual``, ``stripe``)."""
