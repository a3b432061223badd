/* SPDX-License-Identifier: GPL-2.0 */
/*
 * inject_target's hot loop, aimed at by the injector's register-integrity
 * test, and the spin loops its critical sections run.
 *
 * inj_target_regcheck() loads a distinct pattern into every general-purpose
 * register but %rsp and %r15 (the iteration counter, mirrored in memory),
 * sets CF and loops: each iteration checks CF, every register, %rsp, a
 * magic word on the stack and DF/AC, and each CMP/Jcc pair is itself a
 * probe of ZF.  An injection that corrupted anything takes a failure exit
 * that records the value and the iteration; it never crashes.
 */
#include <linux/linkage.h>
#include <linux/objtool.h>
#include <asm/processor-flags.h>

#include "inject_target.h"

#define RC(field)	(RC_##field + inj_regcheck)(%rip)

	.section .rodata
	.balign 8
regcheck_patterns:
	.quad 0x0123456789abcdef, 0x1032547698badcfe, 0x2301674589efabcd
	.quad 0x3210765498fedcba, 0x456789abcdef0123, 0x54769810dcfe32ba
	.quad 0x6745cdab0123ef89, 0x76543210fedcba98, 0x89abcdef01234567
	.quad 0x98badcfe10325476, 0xabcdef0123456789, 0xbadcfe1032547698
	.quad 0xcdef0123456789ab, 0xdcfe1032547698ba

#define PATTERN(n)	(regcheck_patterns + 8 * (n))(%rip)

.macro CHECK reg, n
	cmpq	PATTERN(\n), \reg
	jne	.Lfail_\n
.endm

.macro FAIL reg, n
.Lfail_\n:
	movq	\reg, RC(FAIL_VALUE)
	movl	$(RC_FAIL_RAX + \n), %eax
	jmp	.Lfailed
.endm

	.text
SYM_FUNC_START(inj_target_regcheck)
	pushq	%rbx
	pushq	%rbp
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	pushq	$RC_STACK_MAGIC
	movq	%rsp, RC(SAVED_RSP)
	movq	$0, RC(MIRROR)
	xorl	%r15d, %r15d
	movq	PATTERN(0), %rax
	movq	PATTERN(1), %rbx
	movq	PATTERN(2), %rcx
	movq	PATTERN(3), %rdx
	movq	PATTERN(4), %rsi
	movq	PATTERN(5), %rdi
	movq	PATTERN(6), %rbp
	movq	PATTERN(7), %r8
	movq	PATTERN(8), %r9
	movq	PATTERN(9), %r10
	movq	PATTERN(10), %r11
	movq	PATTERN(11), %r12
	movq	PATTERN(12), %r13
	movq	PATTERN(13), %r14
	stc
SYM_INNER_LABEL(inj_target_loop_start, SYM_L_GLOBAL)
	ANNOTATE_NOENDBR
	jnc	.Lfail_cf
	CHECK	%rax, 0
	CHECK	%rbx, 1
	CHECK	%rcx, 2
	CHECK	%rdx, 3
	CHECK	%rsi, 4
	CHECK	%rdi, 5
	CHECK	%rbp, 6
	CHECK	%r8, 7
	CHECK	%r9, 8
	CHECK	%r10, 9
	CHECK	%r11, 10
	CHECK	%r12, 11
	CHECK	%r13, 12
	CHECK	%r14, 13
	cmpq	RC(SAVED_RSP), %rsp
	jne	.Lfail_rsp
	cmpq	$RC_STACK_MAGIC, (%rsp)
	jne	.Lfail_magic
	pushfq
	testq	$(X86_EFLAGS_DF | X86_EFLAGS_AC), (%rsp)
	leaq	8(%rsp), %rsp
	jnz	.Lfail_flags
	incq	%r15
	incq	RC(MIRROR)
	cmpq	RC(MIRROR), %r15
	jne	.Lfail_counter
	cmpq	RC(LIMIT), %r15
	jae	.Ldone
	cmpq	$0, RC(STOP)
	jne	.Ldone
	stc
	jmp	inj_target_loop_start
SYM_INNER_LABEL(inj_target_loop_end, SYM_L_GLOBAL)
	ANNOTATE_NOENDBR
.Ldone:
	xorl	%eax, %eax
	jmp	.Lout

	FAIL	%rax, 0
	FAIL	%rbx, 1
	FAIL	%rcx, 2
	FAIL	%rdx, 3
	FAIL	%rsi, 4
	FAIL	%rdi, 5
	FAIL	%rbp, 6
	FAIL	%r8, 7
	FAIL	%r9, 8
	FAIL	%r10, 9
	FAIL	%r11, 10
	FAIL	%r12, 11
	FAIL	%r13, 12
	FAIL	%r14, 13
.Lfail_cf:
	movl	$RC_FAIL_CF, %eax
	jmp	.Lfailed
.Lfail_rsp:
	movq	%rsp, RC(FAIL_VALUE)
	movl	$RC_FAIL_RSP, %eax
	jmp	.Lfailed
.Lfail_magic:
	movq	(%rsp), %rax
	movq	%rax, RC(FAIL_VALUE)
	movl	$RC_FAIL_STACK_MAGIC, %eax
	jmp	.Lfailed
.Lfail_flags:
	movl	$RC_FAIL_FLAGS, %eax
	jmp	.Lfailed
.Lfail_counter:
	movq	%r15, RC(FAIL_VALUE)
	movl	$RC_FAIL_COUNTER, %eax
.Lfailed:
	movq	RC(MIRROR), %rcx
	movq	%rcx, RC(FAIL_ITERATION)
.Lout:
	popq	%rcx
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbp
	popq	%rbx
	RET
SYM_FUNC_END(inj_target_regcheck)

/* One spin function per kind of critical section, so each has its own range. */
.macro SPIN name
SYM_FUNC_START(inj_target_spin_\name)
.Lspin_\name:
	decq	%rdi
	jnz	.Lspin_\name
	RET
SYM_FUNC_END(inj_target_spin_\name)
.endm

	SPIN preempt
	SPIN spinlock
	SPIN rcu
	SPIN bh
	SPIN irq
	SPIN fpu
