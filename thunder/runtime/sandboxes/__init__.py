"""Real tool sandboxes: directories, ports and processes that live and die with a program.

* ``provider``: the OS mechanics (allocate, set up, start, tear down, measure disk), with
  ``process_tree``; ``docker``: the same in containers;
* ``tool_host``: ``LiveToolHost``, which carries out tool-policy decisions and keeps every
  sandbox's state (``state``), never leaking a port, process or directory silently;
* ``api``: the ``/programs/{id}/sandboxes`` endpoints.
"""
