/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The trampoline an injected task returns into from the timer interrupt.
 *
 * The hrtimer callback changed only the saved instruction pointer, so IRET
 * restored every register, the stack pointer and the flags of the
 * interrupted code and started one of the INJ_STUBS entry stubs here
 * instead of the interrupted instruction.  Stub N pushes a return slot and
 * its number N (the pending record the callback claimed), then the common
 * part saves the flags and the caller-saved registers and calls
 * inj_tramp_body(slot, N), which fills the slot with the interrupted
 * address and sleeps.  Everything is restored and the return goes through
 * the slot: the interrupted code resumes exactly where it was, with every
 * register and flag as it left them.
 *
 * Rules kept here:
 * - only PUSH and JMP before PUSHF: nothing may change a flag before it is
 *   saved;
 * - only LEA for pointer arithmetic: ADD/SUB would change flags;
 * - everything lives above %rsp at all times (interrupts and NMIs may
 *   write below it);
 * - after POPF only LEA and the return, which must not be the call-depth
 *   tracking return thunk: that one changes flags.
 */
#include <linux/linkage.h>
#include <linux/objtool.h>
#include <asm/alternative.h>
#include <asm/asm.h>
#include <asm/cpufeatures.h>
#include <asm/nospec-branch.h>
#include <asm/unwind_hints.h>

#include "sched_inject_tramp.h"

/* UNWIND_HINT_EMPTY became UNWIND_HINT_UNDEFINED in 6.4. */
#ifdef INJ_HAVE_UNWIND_HINT_UNDEFINED
#define INJ_UNWIND_HINT_UNDEFINED	UNWIND_HINT_UNDEFINED
#else
#define INJ_UNWIND_HINT_UNDEFINED	UNWIND_HINT_EMPTY
#endif

/* Words pushed after the slot and the stub number: the flags and nine registers. */
#define INJ_SAVED_WORDS		10

	.text
SYM_CODE_START(inj_trampoline)
	/* Entered by IRET, never by an indirect branch (FRED's WFE is refused). */
	ANNOTATE_NOENDBR
	/* Stub N: exactly INJ_STUB_SIZE bytes, push imm8, push imm8, jmp rel32. */
	.set	inj_stub, 0
	.rept	INJ_STUBS
	/* Nothing is known about the frame until the return slot exists. */
	INJ_UNWIND_HINT_UNDEFINED
	pushq	$0
	/* From here the stack looks like a call from the interrupted code. */
	UNWIND_HINT_FUNC
	pushq	$inj_stub
	{disp32} jmp .Linj_common
	.set	inj_stub, inj_stub + 1
	.endr

.Linj_common:
	pushfq
	pushq	%rax
	pushq	%rcx
	pushq	%rdx
	pushq	%rsi
	pushq	%rdi
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	/* Callee-saved registers survive the C call by the calling convention. */
	leaq	((INJ_SAVED_WORDS + 1) * 8)(%rsp), %rdi
	movq	(INJ_SAVED_WORDS * 8)(%rsp), %rsi
	call	inj_tramp_body
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rdi
	popq	%rsi
	popq	%rdx
	popq	%rcx
	popq	%rax
	popfq
	/* Drop the stub number; the return slot is next. */
	leaq	8(%rsp), %rsp
#ifdef X86_FEATURE_CALL_DEPTH
	ALTERNATIVE __stringify(RET), \
		    __stringify(ANNOTATE_UNRET_SAFE; ret; int3), \
		    X86_FEATURE_CALL_DEPTH
#else
	RET
#endif
SYM_CODE_END(inj_trampoline)
_ASM_NOKPROBE(inj_trampoline)
