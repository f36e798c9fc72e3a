//go:build amd64 && !purego

#include "textflag.h"

// func adamAVX(p, m, v, g []float32, c *adamConsts)
// len(p) is a positive multiple of 8; m, v, g are at least as long.
TEXT ·adamAVX(SB), NOSPLIT, $0-104
	MOVQ p_base+0(FP), DI
	MOVQ p_len+8(FP), CX
	MOVQ m_base+24(FP), SI
	MOVQ v_base+48(FP), DX
	MOVQ g_base+72(FP), BX
	MOVQ c+96(FP), AX
	VBROADCASTSS 0(AX), Y8   // β1
	VBROADCASTSS 4(AX), Y9   // 1−β1
	VBROADCASTSS 8(AX), Y10  // β2
	VBROADCASTSS 12(AX), Y11 // 1−β2
	VBROADCASTSS 16(AX), Y12 // step
	VBROADCASTSS 20(AX), Y13 // ε
	SHRQ $3, CX

loop:
	VMOVUPS (BX), Y0     // g
	VMULPS  (SI), Y8, Y1 // β1·m
	VMULPS  Y0, Y9, Y2   // (1−β1)·g
	VADDPS  Y2, Y1, Y1   // m' = β1·m + (1−β1)·g
	VMOVUPS Y1, (SI)
	VMULPS  (DX), Y10, Y3 // β2·v
	VMULPS  Y0, Y11, Y4   // (1−β2)·g
	VMULPS  Y0, Y4, Y4    // (1−β2)·g·g
	VADDPS  Y4, Y3, Y3    // v' = β2·v + (1−β2)·g·g
	VMOVUPS Y3, (DX)
	VSQRTPS Y3, Y5        // √v'
	VADDPS  Y13, Y5, Y5   // √v' + ε
	VMULPS  Y1, Y12, Y6   // step·m'
	VDIVPS  Y5, Y6, Y6    // step·m' / (√v' + ε)
	VMOVUPS (DI), Y7
	VSUBPS  Y6, Y7, Y7    // p − …
	VMOVUPS Y7, (DI)
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, BX
	DECQ    CX
	JNZ     loop
	VZEROUPPER
	RET
