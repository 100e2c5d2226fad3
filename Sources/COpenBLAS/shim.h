// OpenBLAS as Debian ships it (libopenblas-dev). pkg-config adds the include path of the
// pthread flavour, whose cblas.h also declares openblas_get_corename and friends.
#include <cblas.h>
