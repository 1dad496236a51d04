#include <rrd.h>
#include <rrd_client.h>
