"""Import every domain's models so metadata (Alembic, tests) sees all tables."""

from hongyan.accounts import models as accounts  # noqa: F401
from hongyan.audit import models as audit  # noqa: F401
from hongyan.billing import models as billing  # noqa: F401
from hongyan.campaigns import models as campaigns  # noqa: F401
from hongyan.channels import models as channels  # noqa: F401
from hongyan.compliance import models as compliance  # noqa: F401
from hongyan.db.base import Base
from hongyan.dispatch import models as dispatch  # noqa: F401
from hongyan.messaging import models as messaging  # noqa: F401
from hongyan.verify import models as verify  # noqa: F401
from hongyan.webhooks import models as webhooks  # noqa: F401

metadata = Base.metadata
