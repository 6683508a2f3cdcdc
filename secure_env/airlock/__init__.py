"""The airlock stage: outputs leave a workspace only through it.

``outputs`` is the output request (files with their context, automatic disclosure checks, two
independent reviews, release with a manifest); ``lifecycle`` its states and transitions; ``rules``
who may do what and how votes become a file's status; ``disclosure`` and ``profiles`` the statistical
disclosure control; ``dp`` the differential-privacy budget ledger; ``models`` the tables.
"""
