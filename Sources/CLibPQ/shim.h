// libpq, PostgreSQL's C client library, as Debian ships it (libpq-dev); pkg-config adds
// /usr/include/postgresql.
#include <libpq-fe.h>
