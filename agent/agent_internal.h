/* agent_internal.h - the fields behind the opaque struct mw_agent, for the agent modules that
 * implement the public calls (recording, sync). Not installed; scanner apps never see it.
 * Thread safety: as struct mw_agent, one per thread. */
#ifndef MIDWAY_AGENT_INTERNAL_H
#define MIDWAY_AGENT_INTERNAL_H
#include "midway/agent.h"
#include "store.h"

struct mw_agent {
    struct mw_store *store;      /* owned; the data file */
    struct mw_agent_options opt; /* the options as opened, defaults filled in */
};

#endif
