"""``python -m actorchat``: the same as the ``actorchat`` command."""

from actorchat._gevent import patch

patch()

import sys  # noqa: E402

from actorchat._cli import main  # noqa: E402

sys.exit(main())
