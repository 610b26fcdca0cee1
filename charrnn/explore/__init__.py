"""The explorer page (``charrnn explore``, and ``/explore`` of ``charrnn serve``): a text typed
in a browser, coloured by what the model computes on it (``charrnn.inspect.explain``), and the
JSON endpoints under it. Sits above ``serve`` (whose server it runs on) and ``inspect`` and
``generation`` (whose figures and sampling filters it shows); never imports training."""
