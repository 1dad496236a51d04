#include <qb/qbipcs.h>
#include <qb/qbipcc.h>
#include <qb/qbipc_common.h>
