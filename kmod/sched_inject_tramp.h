/* SPDX-License-Identifier: GPL-2.0 */
/* Shared by the trampoline (assembly) and the injector (C). */
#ifndef _SCHED_INJECT_TRAMP_H
#define _SCHED_INJECT_TRAMP_H

/* Entry stubs, one per pending record; stub N is at inj_trampoline + N * INJ_STUB_SIZE. */
#define INJ_STUBS	64
#define INJ_STUB_SIZE	9

#ifndef __ASSEMBLY__
#include <linux/compiler.h>

/* The assembly trampoline: INJ_STUBS entry stubs, then the common part. */
void inj_trampoline(void);
/* Its C half, called with the return slot's address and the stub number. */
__visible void inj_tramp_body(unsigned long *ret_slot, unsigned long index);
#endif

#endif /* _SCHED_INJECT_TRAMP_H */
