/* Writes ycck.jpg: the four patches of cmyk.jpg (red, green, blue, black),
 * stored as YCCK with an Adobe APP14 marker (transform 2), in the inverted
 * CMYK convention Photoshop uses. cc ycck.c -ljpeg -o /tmp/ycck && /tmp/ycck */
#include <stdio.h>
#include <jpeglib.h>

int main(void) {
	static const unsigned char cmyk[4][4] = {{0, 255, 255, 0}, {255, 0, 255, 0}, {255, 255, 0, 0}, {0, 0, 0, 255}};
	FILE *f = fopen("ycck.jpg", "wb");
	if (!f) return 1;
	struct jpeg_compress_struct c;
	struct jpeg_error_mgr e;
	c.err = jpeg_std_error(&e);
	jpeg_create_compress(&c);
	jpeg_stdio_dest(&c, f);
	c.image_width = 16;
	c.image_height = 16;
	c.input_components = 4;
	c.in_color_space = JCS_CMYK;
	jpeg_set_defaults(&c);
	jpeg_set_colorspace(&c, JCS_YCCK);
	jpeg_set_quality(&c, 95, TRUE);
	for (int i = 0; i < c.num_components; i++) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
	jpeg_start_compress(&c, TRUE);
	unsigned char row[16 * 4];
	for (int y = 0; y < 16; y++) {
		for (int x = 0; x < 16; x++) {
			const unsigned char *p = cmyk[(y / 8) * 2 + x / 8];
			for (int k = 0; k < 4; k++) row[x * 4 + k] = 255 - p[k];
		}
		JSAMPROW r = row;
		jpeg_write_scanlines(&c, &r, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	return fclose(f) != 0;
}
