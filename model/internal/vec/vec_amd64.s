//go:build amd64 && !purego

#include "textflag.h"

// Element-wise kernels, eight floats at a time. Each computes what its Go
// loop computes, operation by operation (no fused multiply-add). The
// length n (the first slice's) is a positive multiple of 8.

// func affineAVX(out, x []float32, s, t float32)
// out = x·s + t
TEXT ·affineAVX(SB), NOSPLIT, $0-56
	MOVQ out_base+0(FP), DI
	MOVQ out_len+8(FP), CX
	MOVQ x_base+24(FP), SI
	VBROADCASTSS s+48(FP), Y8
	VBROADCASTSS t+52(FP), Y9
	SHRQ $3, CX

affine_loop:
	VMULPS  (SI), Y8, Y0
	VADDPS  Y9, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     affine_loop
	VZEROUPPER
	RET

// func reluBiasAVX(out, x []float32, b float32)
// out = max(x + b, 0), NaN propagating (a −0 sum stays −0)
TEXT ·reluBiasAVX(SB), NOSPLIT, $0-52
	MOVQ out_base+0(FP), DI
	MOVQ out_len+8(FP), CX
	MOVQ x_base+24(FP), SI
	VBROADCASTSS b+48(FP), Y8
	VXORPS Y9, Y9, Y9
	SHRQ $3, CX

relu_loop:
	VADDPS  (SI), Y8, Y0
	VMAXPS  Y0, Y9, Y0 // max(0, y): y when y is NaN
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     relu_loop
	VZEROUPPER
	RET

// func maskedAffineAVX2(out, g, x []float32, a, b, c float32)
// out = a·g + b·x + c where x's bits as an int32 are > 0, else 0
TEXT ·maskedAffineAVX2(SB), NOSPLIT, $0-84
	MOVQ out_base+0(FP), DI
	MOVQ out_len+8(FP), CX
	MOVQ g_base+24(FP), SI
	MOVQ x_base+48(FP), DX
	VBROADCASTSS a+72(FP), Y8
	VBROADCASTSS b+76(FP), Y9
	VBROADCASTSS c+80(FP), Y10
	VPXOR Y11, Y11, Y11
	SHRQ $3, CX

masked_loop:
	VMOVUPS  (DX), Y1      // x
	VMULPS   (SI), Y8, Y0  // a·g
	VMULPS   Y1, Y9, Y2    // b·x
	VADDPS   Y2, Y0, Y0
	VADDPS   Y10, Y0, Y0   // + c
	VPCMPGTD Y11, Y1, Y3   // x > 0 as int32
	VPAND    Y3, Y0, Y0
	VMOVUPS  Y0, (DI)
	ADDQ     $32, SI
	ADDQ     $32, DX
	ADDQ     $32, DI
	DECQ     CX
	JNZ      masked_loop
	VZEROUPPER
	RET

// func maskedAffine0AVX2(out, x []float32, b, c float32)
// out = b·x + c where x's bits as an int32 are > 0, else 0
TEXT ·maskedAffine0AVX2(SB), NOSPLIT, $0-56
	MOVQ out_base+0(FP), DI
	MOVQ out_len+8(FP), CX
	MOVQ x_base+24(FP), DX
	VBROADCASTSS b+48(FP), Y9
	VBROADCASTSS c+52(FP), Y10
	VPXOR Y11, Y11, Y11
	SHRQ $3, CX

masked0_loop:
	VMOVUPS  (DX), Y1
	VMULPS   Y1, Y9, Y0
	VADDPS   Y10, Y0, Y0
	VPCMPGTD Y11, Y1, Y3
	VPAND    Y3, Y0, Y0
	VMOVUPS  Y0, (DI)
	ADDQ     $32, DX
	ADDQ     $32, DI
	DECQ     CX
	JNZ      masked0_loop
	VZEROUPPER
	RET

// The float64 reductions keep eight lanes: lane l sums the elements i with
// i mod 8 = l, in order (Go's loops in sums.go do the same).

// func sumSqAVX(x []float32, s, q *[8]float64)
TEXT ·sumSqAVX(SB), NOSPLIT, $0-40
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	MOVQ s+24(FP), AX
	MOVQ q+32(FP), DX
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	SHRQ $3, CX

sumsq_loop:
	VCVTPS2PD (SI), Y0
	VCVTPS2PD 16(SI), Y1
	VADDPD    Y0, Y2, Y2
	VADDPD    Y1, Y3, Y3
	VMULPD    Y0, Y0, Y0
	VMULPD    Y1, Y1, Y1
	VADDPD    Y0, Y4, Y4
	VADDPD    Y1, Y5, Y5
	ADDQ      $32, SI
	DECQ      CX
	JNZ       sumsq_loop
	VMOVUPD   Y2, (AX)
	VMOVUPD   Y3, 32(AX)
	VMOVUPD   Y4, (DX)
	VMOVUPD   Y5, 32(DX)
	VZEROUPPER
	RET

// func sumDotAVX(g, x []float32, s, d *[8]float64)
TEXT ·sumDotAVX(SB), NOSPLIT, $0-64
	MOVQ g_base+0(FP), SI
	MOVQ g_len+8(FP), CX
	MOVQ x_base+24(FP), BX
	MOVQ s+48(FP), AX
	MOVQ d+56(FP), DX
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	SHRQ $3, CX

sumdot_loop:
	VCVTPS2PD (SI), Y0
	VCVTPS2PD 16(SI), Y1
	VCVTPS2PD (BX), Y6
	VCVTPS2PD 16(BX), Y7
	VADDPD    Y0, Y2, Y2
	VADDPD    Y1, Y3, Y3
	VMULPD    Y6, Y0, Y0
	VMULPD    Y7, Y1, Y1
	VADDPD    Y0, Y4, Y4
	VADDPD    Y1, Y5, Y5
	ADDQ      $32, SI
	ADDQ      $32, BX
	DECQ      CX
	JNZ       sumdot_loop
	VMOVUPD   Y2, (AX)
	VMOVUPD   Y3, 32(AX)
	VMOVUPD   Y4, (DX)
	VMOVUPD   Y5, 32(DX)
	VZEROUPPER
	RET

// func sumAVX(x []float32, s *[8]float64)
TEXT ·sumAVX(SB), NOSPLIT, $0-32
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	MOVQ s+24(FP), AX
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	SHRQ $3, CX

sum_loop:
	VCVTPS2PD (SI), Y0
	VCVTPS2PD 16(SI), Y1
	VADDPD    Y0, Y2, Y2
	VADDPD    Y1, Y3, Y3
	ADDQ      $32, SI
	DECQ      CX
	JNZ       sum_loop
	VMOVUPD   Y2, (AX)
	VMOVUPD   Y3, 32(AX)
	VZEROUPPER
	RET
